"""Tag hygiene and cost allocation: the rule set (aliases, inherited tags, ordered rules), its SQL, and showback."""
