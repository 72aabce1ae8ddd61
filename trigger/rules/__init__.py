"""Rules: the model, loading and the compiled matchers that decide which rules an event fires."""
