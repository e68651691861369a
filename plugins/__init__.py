"""The built-in provider plugins, registered through the `reauth_portal.plugins` entry points."""
