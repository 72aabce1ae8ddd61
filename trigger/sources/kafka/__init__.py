"""The Kafka source: consumer groups, offsets committed only behind finished work."""
