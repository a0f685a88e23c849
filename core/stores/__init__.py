"""Store adapters of the working (Redis) and episodic (Postgres) tiers; each borrows a ready client."""

from core.stores.postgres_episodic import PostgresEpisodeStore, init_connection
from core.stores.redis_working import RedisWorkingStore

__all__ = ["PostgresEpisodeStore", "RedisWorkingStore", "init_connection"]
