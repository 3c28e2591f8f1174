"""Teaching: the exercise checker and the exercises (skeletons, reference inputs and outputs)."""
