"""Discovery: the landing zone, safe XML/zip opening, tonight's exports, the quarantine."""
