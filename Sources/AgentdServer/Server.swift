import AgentdCore
