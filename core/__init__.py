"""What every stage shares and nothing else: the one UTC convention (`clock`) and typed YAML config
(`config`). It imports none of features/, training/, serving/ or diamond/."""
