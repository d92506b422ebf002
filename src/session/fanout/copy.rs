//! COPY … FROM STDIN into a sharded table, split row by row.

mod field;
mod rows;
