"""The label controller: mirrors verified node trust into the node labels trustgate owns."""
