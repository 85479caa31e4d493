"""The verifier: input sets, specifications, sound bounds, and the verification built on them (DESIGN.md §5)."""
