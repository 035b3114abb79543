// Placeholder until the first generated file lands (scripts/generate-protos).
