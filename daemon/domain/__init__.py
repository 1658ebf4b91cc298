"""The pure, synchronous domain: only the standard library is imported here."""
