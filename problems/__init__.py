"""Reference problems for jaxinv, each built on the public API only."""
