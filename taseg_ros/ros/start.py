"""``taseg_node`` (``ros2 run taseg_ros taseg_node``): the node's executable. A missing dependency is
said in one line, naming the package and how to install it, instead of an import traceback."""
from __future__ import annotations

import signal
import sys

from taseg_ros.dependencies import missing_message


def main(args: list[str] | None = None) -> int:
    try:
        # Here, not at the top: these imports are what may fail (rclpy, torch, ...).
        import rclpy
        from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
        from rclpy.lifecycle import TransitionCallbackReturn

        from taseg_ros.ros.node import TASegNode
    except ModuleNotFoundError as exc:
        message = missing_message(exc.name)
        if message is None:
            raise
        print(f"taseg_node: cannot start: {message}", file=sys.stderr)
        return 1
    rclpy.init(args=args)
    node = TASegNode()
    # Single-threaded on purpose: the callbacks are cheap (inference has its own thread), and
    # transitions that destroy subscriptions must not race another executor thread building a
    # wait set (rclpy's MultiThreadedExecutor dies with InvalidHandle when they do).
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        if node.get_parameter("autostart").value:
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().fatal(f"cannot start: {node.configure_error or 'configure failed'}")
                return 1
            if node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().fatal("cannot start: activate failed")
                return 1
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        # Ctrl-C under `ros2 launch` reaches the node twice (the terminal's process group, then
        # launch's own SIGINT): the second must not break the clean-up with a traceback.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        executor.shutdown()
        node.destroy_node()  # releases the model, the threads and the publishers first
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
