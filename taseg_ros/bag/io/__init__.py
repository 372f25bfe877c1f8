"""Reading and writing rosbag2 recordings (sqlite3 and mcap) with ``rosbags``."""
