"""The avatar inside other voice-agent frameworks: a LiveKit Agents avatar worker and a Pipecat video service.

Each module imports its framework only when used (optional extra `agents`: `pip install -e ".[agents]"`).
`streams` holds what both share: lip-sync streams over one renderer, a session cap and the load they put on it.
"""
