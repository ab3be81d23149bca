"""`llm-course train` under torchrun, with a Ctrl-C pressed in process 1 only, at step STOP (0: never).

    python -m torch.distributed.run --nproc_per_node=2 tests/ddp_ctrl_c.py STOP train ...
"""

import os
import signal
import sys

from llm_course import cli, pipeline


def main() -> int:
    stop_at, argv = int(sys.argv[1]), sys.argv[2:]
    real_train_model = pipeline.train_model

    def train_model(*args, callbacks=(), **kwargs):
        def press_ctrl_c(event):
            if event["event"] == "step" and event["step"] == stop_at and os.environ["RANK"] == "1":
                os.kill(os.getpid(), signal.SIGINT)

        return real_train_model(*args, callbacks=[press_ctrl_c, *callbacks], **kwargs)

    pipeline.train_model = train_model
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
