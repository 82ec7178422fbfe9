"""A planted ``pickled_data``: OneFlow's pickle layout whose unpickling creates a marker file (it calls
``open(marker, "w")``), to prove that no loader of the package unpickles what it reads."""
import os
import pickle


class _Opens:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def plant(directory, marker):
    """Make ``directory`` an old-layout (``flow.save``) directory whose ``pickled_data`` creates ``marker``."""
    os.makedirs(directory, exist_ok=True)
    for entry in os.listdir(directory):  # the new layout's file must not be there
        path = os.path.join(directory, entry)
        if os.path.isfile(path):
            os.remove(path)
    with open(os.path.join(directory, "pickled_data"), "wb") as handle:
        pickle.dump({"protocol_version": 1, "data": _Opens(marker)}, handle)
