"""ScheduleService: task CRUD and state transitions in the database; periodic jobs."""
