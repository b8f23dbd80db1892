"""The method: TRSP's two regularizers (`losses`), every choice of a run (`config`), the trainer both stages
and the healing steps share (`training`), and the two-stage loop that selects and deletes layers (`trsp`)."""
