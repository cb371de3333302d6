"""The results document (results.json, the contract every output reads), its schema, files and config hash."""
