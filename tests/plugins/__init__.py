"""Plugin modules the tests load by name (`plugins=[tests.plugins.<module>]`), as a user's would be."""
