// Sigil browser client: placeholder, replaced by the real client.
