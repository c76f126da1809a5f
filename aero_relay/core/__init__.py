"""Sans-IO core: pure, deterministic, no trio/asyncio imports, time is always an argument."""
