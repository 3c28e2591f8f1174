"""Exercise maxpool_wta: winner-take-all relevance through a max-pooling layer.

Implement ``maxpool_wta`` below, then check it:

    python -m minilrp.check maxpool_wta this_file.py

The checker runs your file in a separate process, on small inputs worked by hand and on
fresh random ones (the seed is printed; --seed reproduces them), with a time limit per
call. minilrp itself cannot be imported there: write it with NumPy.

Background. A max-pooling layer passes on the maximum of every K x K window. LRP usually sends
each window's relevance back to the input that won the maximum ("winner-take-all"; it follows
the gradient), which conserves relevance exactly.

Window (y, x) of a plane covers the rows y*stride .. y*stride + K - 1 and the columns
x*stride .. x*stride + K - 1 (no padding; Ho = (H - K) // stride + 1, Wo likewise).

Conventions (minilrp's):

- Ties: when several inputs of a window share the maximum, the window's relevance is split
  evenly among them (R / number of maxima). After a ReLU, windows full of zeros are common!
- Overlapping windows (stride < K): an input can be the maximum of several windows; it
  receives the sum of their shares.
- Inputs in no window (when H - K is not a multiple of the stride) and inputs that are not
  a window's maximum get 0.
- Every (n, c) plane is pooled separately. Work in float64; do not modify the inputs.
"""


def maxpool_wta(a, R, kernel_size, stride):
    """Winner-take-all relevance of the inputs of MaxPool2d(kernel_size, stride).

    a:  (N, C, H, W) float64, the pooling layer's input
    R:  (N, C, Ho, Wo), the relevance of its outputs
    kernel_size, stride: ints
    returns  R_in: (N, C, H, W) float64
    """
    raise NotImplementedError("write maxpool_wta")
