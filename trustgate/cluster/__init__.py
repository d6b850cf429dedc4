"""The cluster side: the API client, resource names, the watch-fed cache, report publishing."""
