"""Session reports: the digest of a session, its JSON form, its timeline and HTML page."""
