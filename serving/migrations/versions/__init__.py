"""The store's revisions, oldest first: 0001 is the schema as the release before migrations wrote it."""
