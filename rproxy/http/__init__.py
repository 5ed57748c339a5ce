"""HTTP/1.1 reverse proxying: framing, header rewriting and routing (pure
decision code), and the protocols that use them."""
