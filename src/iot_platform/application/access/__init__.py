"""Who may call the platform: API keys, users and the tokens they are given."""
