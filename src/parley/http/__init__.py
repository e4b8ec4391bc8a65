"""The HTTP surface: routes, schemas, error translation, OpenAPI."""
