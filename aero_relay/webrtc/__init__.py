"""The only package that knows asyncio exists (aiortc under trio-asyncio)."""
