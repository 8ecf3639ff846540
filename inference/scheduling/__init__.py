"""Where a call waits and which runner takes it: the fair scheduler of a runner pool (`scheduler`), the Redis
request queue between hosts (`queue`) and the placement of models on pools (`pools`)."""
