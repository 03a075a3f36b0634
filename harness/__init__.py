"""What tests and benchmarks share: loopback servers that speak the real protocols (a web host, SerpAPI,
Gemini/OpenAI, the Hub, vLLM, Prefect, Docker), the gateway as a process and a load generator for it,
Debian's documentation PDFs as input no one here wrote, and projects and pipeline runs as a user makes
them. Not part of the product: nothing in core, tasks, flows or serving imports it.
"""
