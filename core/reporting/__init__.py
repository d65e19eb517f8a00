"""What goes out to a person: reports in every registered format, their charts and PDF,
audio clips. Imports storage, index and the rooms below them."""
