"""What the words say: transcripts, redaction of personal data, sentiment of the redacted
text. Imports base and guard."""
