"""The research team (layer 10): the knowledge base of ideas (`airlab.agents.knowledge`) and,
later, the roles that propose, design, run and judge experiments from it."""
