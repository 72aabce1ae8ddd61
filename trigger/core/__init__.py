"""What every source builds on: the event pipeline, state stores, metrics and the HTTP
intake for pushed deliveries."""
