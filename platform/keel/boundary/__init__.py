"""The request boundary, shared by the API and the pages: size and depth limits on bodies, strict JSON,
security headers and the Content-Security-Policy. What a request carries is checked here, before any of
it reaches a view, a query or the database driver."""
