"""The A/B concern, Ray-free: routing between champion and candidate, the feedback log, the sequential
verdict, the vote tally, the leaderboard and the rating queue."""
