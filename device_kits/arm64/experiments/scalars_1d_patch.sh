#!/usr/bin/env bash
# Guest patch (run_test.sh ARM64_GUEST_PATCH): the candidate device-side fix of the aarch64 train
# crash, applied to the INSTALLED fedlab/edge/model.py (the repository's file is not touched).
# TrainableModel.train_step feeds lr/mu/beta as shape (1,) arrays instead of numpy scalars, so
# the signature runner resizes those rank-0 inputs to [1], never to [] (the shape whose resize
# crashes ai-edge-litert's aarch64 InterpreterWrapper::ResizeInputTensor). [1] broadcasts like a
# scalar in every op that uses them (MUL by the gradient, momentum, proximal term).
set -euo pipefail
f="$("$VENV/bin/python" -c 'import fedlab.edge.model as m; print(m.__file__)')"
sed -i -E 's/^( +)(lr|mu|beta)=np\.float32\((lr|mu|beta)\),$/\1\2=np.full((1,), \3, np.float32),/' "$f"
grep -n 'np.full((1,)' "$f"
[ "$(grep -c 'np.full((1,)' "$f")" = 3 ]
