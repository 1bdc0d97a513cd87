"""Everything the operator does in the warehouse, through SQLAlchemy: one concept per module."""
