"""What some registered methods need beyond "any model, any dataset": shared by the per-method test files.

The generic per-method tests build a method, a plain model and (sometimes) no dataset. A method whose architecture is
part of the method, or whose `setup` draws from the training set, must refuse those with a clear ValueError (the tests
check the message) and is then trained where it applies (its own model; with data) instead of being skipped silently.
"""

# method -> (the ValueError it raises on another model, {plain backbone: the method's own version of it})
OWN_MODEL = {"bbn": ("needs a BBN model", {"cnn8": "bbn_cnn8", "multi_expert_resnet32": None})}
# methods whose setup needs the dataset (BBN's reversed batches, MDCS's two views), with the ValueError without one
NEEDS_DATA = {"bbn": "needs a BBN model|draws the re-balancing", "mdcs": "in-memory training images"}


def base_name(name: str) -> str: return name.split("+")[0]
