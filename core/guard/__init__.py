"""Who may see what: viewers and their scopes, API keys, Host/Origin checks.
Imports base only."""
