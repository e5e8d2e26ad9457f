"""Integer reference: the numpy model of exactly the arithmetic the generated C performs."""
