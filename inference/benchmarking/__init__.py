"""`manage.py benchmark` in parts: the models it builds, the load client, the BentoML peer, the report."""
