"""The Streamlit app: navigation in app.py, thin pages, shared components."""
