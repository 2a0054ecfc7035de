"""Fundamentals from scratch in NumPy only: autodiff (tape, duals, graphs), layers, logistic regression,
LU/QR/Cholesky, and trees. Each module names its source and equations; torch, SciPy and scikit-learn are
used only by the tests, as references.
"""

from learnloop.scratch.autodiff import Tape, Tensor, stop_gradient
from learnloop.scratch.cart import DecisionTree
from learnloop.scratch.forest import Bagging, RandomForest
from learnloop.scratch.forward import Dual, jacfwd, jvp
from learnloop.scratch.graph import Graph, function, trace
from learnloop.scratch.linalg import NotPositiveDefiniteError, SingularMatrixError, solve_triangular
from learnloop.scratch.linalg_cholesky import cho_solve, cholesky, multivariate_normal, mvn_logpdf, solve_spd
from learnloop.scratch.linalg_lu import det, inv, lu, lu_factor, lu_solve, solve
from learnloop.scratch.linalg_qr import lstsq, qr
from learnloop.scratch.logistic import LogisticRegression
from learnloop.scratch.numgrad import numerical_gradient, numerical_jacobian
from learnloop.scratch.oner import OneR
from learnloop.scratch.optim import SGD, Adam

__all__ = [
    "SGD",
    "Adam",
    "Bagging",
    "DecisionTree",
    "Dual",
    "Graph",
    "LogisticRegression",
    "NotPositiveDefiniteError",
    "OneR",
    "RandomForest",
    "SingularMatrixError",
    "Tape",
    "Tensor",
    "cho_solve",
    "cholesky",
    "det",
    "function",
    "inv",
    "jacfwd",
    "jvp",
    "lstsq",
    "lu",
    "lu_factor",
    "lu_solve",
    "multivariate_normal",
    "mvn_logpdf",
    "numerical_gradient",
    "numerical_jacobian",
    "qr",
    "solve",
    "solve_spd",
    "solve_triangular",
    "stop_gradient",
    "trace",
]
