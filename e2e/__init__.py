"""Real-browser end-to-end tests (headless Chromium via Playwright); see e2e/README.md."""
