"""What comes in: the upload inbox, the job queue, the Ray executor's shards. Imports
storage and the rooms below it."""
