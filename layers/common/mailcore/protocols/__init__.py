"""SMTP and POP3 sessions with TLS modes and redacted transcripts."""
