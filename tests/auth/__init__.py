"""Sign-in and roles: role resolution, require(), enforcement in the backend, and a real OIDC provider."""
