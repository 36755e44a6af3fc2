"""The benchmark cases, one module each, in the order a run takes them."""

from tools.bench.cases import accuracy
from tools.bench.cases import adam_sparsity
from tools.bench.cases import first_step
from tools.bench.cases import memory
from tools.bench.cases import optimizer
from tools.bench.cases import outcomes
from tools.bench.cases import penalty
from tools.bench.cases import priors
from tools.bench.cases import shrink_speed
from tools.bench.cases import size
from tools.bench.cases import train_step

CASES = [penalty.PENALTY, priors.PRIORS_CASE, accuracy.ACCURACY_CASE,
         memory.MEMORY_CASE, train_step.TRAIN_STEP, first_step.FIRST_STEP,
         optimizer.OPTIMIZER_CASE, outcomes.OUTCOMES_CASE,
         adam_sparsity.ADAM_SPARSITY_CASE, shrink_speed.SHRINK_SPEED_CASE,
         size.SIZE_CASE]
