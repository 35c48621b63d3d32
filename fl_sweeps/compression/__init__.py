"""Compression of the model broadcast (server→client) and aggregation (client→server), and its exact bit cost."""
