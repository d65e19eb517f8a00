"""The indexes beside the store, rebuilt from it when they disagree: vectors for similar
moments (base index plus delta generations), words for transcript search, and the searches and
pattern runs over them. Imports storage and the rooms below it."""
