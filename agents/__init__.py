"""RL agents built on the curlrl core (no environment code here)."""
from curlrl.agents.curl_sac import AgentConfig, CurlSacAgent

__all__ = ["AgentConfig", "CurlSacAgent"]
