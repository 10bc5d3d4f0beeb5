"""Single sign-on per customer: SAML 2.0 identity providers and LDAPS directories."""
